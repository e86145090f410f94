"""GPUKubeSpawner adds gpuhub's volumes to the admin's, in either shape KubeSpawner takes."""

from gpuhub.spawners.kube import _extend

DSHM = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}


def test_list_traits_are_extended():
    home = {"name": "home", "persistentVolumeClaim": {"claimName": "claim-alice"}}
    assert _extend([home], [DSHM]) == [home, DSHM]


def test_dict_traits_as_z2jh_sets_them_stay_dicts_of_objects():
    """z2jh renders ``volumes``/``volume_mounts`` as dicts: extending them as lists would
    turn them into their keys (every spawn from the shipped values failed so)."""
    base = {"00-home": {"name": "home"}, "01-shm": {"name": "shm"}}
    out = _extend(base, [DSHM])
    assert isinstance(out, dict)
    assert out == {**base, "gpuhub-0": DSHM}
    assert all(isinstance(v, dict) for v in out.values())
