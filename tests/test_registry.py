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


def _registry_with_module(tmp_path, monkeypatch, module: str, body: str) -> Registry:
    """A registry and an importable (not yet imported) module ``module`` whose ``body`` can
    decorate with it (``from <module>_reg import REG``)."""
    import sys

    reg = Registry("thing")
    holder = type(sys)(f"{module}_reg")
    holder.REG = reg
    monkeypatch.setitem(sys.modules, f"{module}_reg", holder)
    (tmp_path / f"{module}.py").write_text(f"from {module}_reg import REG\n" + body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return reg


def test_lazy_entries_are_listed_without_importing_and_imported_on_first_get(tmp_path, monkeypatch):
    import sys

    reg = _registry_with_module(tmp_path, monkeypatch, "lazy_defs_xyz", (
        "@REG.register('alpha')\n"
        "def alpha():\n    return 'a'\n"
        "def beta():\n    return 'b'\n"))
    reg.register_lazy("alpha", "lazy_defs_xyz:alpha")  # decorated there too
    reg.register_lazy("beta", "lazy_defs_xyz:beta")  # not decorated: the placeholder is enough
    assert reg.names() == ["alpha", "beta"] and "alpha" in reg and len(reg) == 2
    assert "lazy_defs_xyz" not in sys.modules
    assert reg.get("beta")() == "b" and reg.get("alpha")() == "a"
    assert reg.names() == ["alpha", "beta"]
    with pytest.raises(RegistryError, match="did you mean 'alpha'"):
        reg.get("alpah")


def test_a_lazy_entry_that_disagrees_with_its_module_or_is_malformed_is_refused(tmp_path, monkeypatch):
    reg = _registry_with_module(tmp_path, monkeypatch, "lazy_defs_abc", (
        "@REG.register('gamma')\n"
        "def gamma():\n    return 'g'\n"
        "def other():\n    return 'o'\n"))
    reg.register_lazy("gamma", "lazy_defs_abc:other")
    with pytest.raises(RegistryError, match="is not what lazy_defs_abc registered"):
        reg.get("gamma")
    with pytest.raises(RegistryError, match="not 'module:object'"):
        reg.register_lazy("delta", "no_colon_here")
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register_lazy("gamma", "lazy_defs_abc:gamma")


def test_teacher_kinds_are_known_before_any_adapter_is_imported():
    import subprocess
    import sys

    code = ("import sys; from harness.teachers import TEACHERS; "
            "print(TEACHERS.names()); "
            "print([m for m in sys.modules if m.startswith('harness.teachers.') and m != 'harness.teachers.base'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    names, imported = out.stdout.strip().splitlines()
    assert names == "['dummy', 'embedded', 'fbank', 'hf', 's3prl']" and imported == "[]"
