"""JupyterHub spawners over the gpuhub policy core (entry points ``gpu-local``, ``gpu-kube``)."""
