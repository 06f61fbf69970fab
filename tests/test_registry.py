import pytest

from harness.registry import Registry, RegistryError


def test_register_and_get():
    reg = Registry("loss")

    @reg.register("mse")
    def mse():
        return 1

    assert reg.get("mse") is mse
    assert "mse" in reg and reg.names() == ["mse"] and len(reg) == 1


def test_unknown_name_lists_nearest():
    reg = Registry("stacking variant")
    for name in ("top", "bottom", "middle", "interleaved", "none"):
        reg.register(name)(object())
    with pytest.raises(RegistryError, match=r"unknown stacking variant 'interleave'; did you mean 'interleaved'"):
        reg.get("interleave")


def test_duplicate_and_bad_names_rejected():
    reg = Registry("task")
    reg.register("ks")(1)
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("ks")(2)
    with pytest.raises(RegistryError, match="lowercase"):
        reg.register("KS")
