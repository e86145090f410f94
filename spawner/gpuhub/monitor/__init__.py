"""GPU efficiency on one machine: utilisation sources, the GPU-idle culling policy,
GPU-hours accounting, the history store and the ``gpuhub-monitor`` hub service."""
