import sys
import textwrap

import pytest
import torch

from lavis_ib.common import registry as registry_module
from lavis_ib.common.errors import RegistryError
from lavis_ib.common.registry import Registry, registry


def test_register_and_get_throwaway_registry():
    reg = Registry("widget")

    @reg.register("alpha")
    class Alpha:
        pass

    assert reg.get("alpha") is Alpha
    assert "alpha" in reg
    assert reg.names() == ["alpha"]
    assert "alpha" in repr(reg)


def test_duplicate_registration_raises_unless_forced():
    reg = Registry("widget")
    reg.register("a", obj=int)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", obj=float)
    reg.register("a", obj=float, force=True)
    assert reg.get("a") is float
    reg.register("a", obj=float)  # the same object again is not a conflict (module re-import)


def test_unknown_name_lists_names_and_closest_match():
    reg = Registry("widget")
    reg.register("blip_image_eval", obj=int)
    reg.register("blip_caption", obj=str)
    with pytest.raises(RegistryError) as info:
        reg.get("blip_imag_eval")
    message = str(info.value)
    assert "Did you mean 'blip_image_eval'?" in message
    assert "blip_caption" in message and "blip_image_eval" in message


def test_base_class_checked_at_registration():
    with pytest.raises(RegistryError, match="must be a subclass of lavis_ib.models.base_model.BaseModel"):
        registry.register_model("not_a_model")(object)
    assert "not_a_model" not in registry.models


def test_library_registry_lookups_never_return_none():
    for getter in (registry.get_model_class, registry.get_builder_class, registry.get_task_class,
                   registry.get_processor_class, registry.get_runner_class,
                   registry.get_lr_scheduler_class):
        with pytest.raises(RegistryError, match="unknown"):
            getter("definitely_not_registered")


def test_builtin_processors_load_lazily_on_first_lookup():
    assert "blip_image_eval" in registry.list_processors()
    assert registry.get_processor_class("instruction_template").__name__ == "InstructionTemplateProcessor"


def test_registered_model_subclass_and_force():
    from lavis_ib.models import BaseModel

    @registry.register_model("throwaway_model_for_test")
    class Throwaway(BaseModel):
        pass

    try:
        with pytest.raises(RegistryError):
            registry.register_model("throwaway_model_for_test")(type("Other", (BaseModel,), {}))
        assert registry.get_model_class("throwaway_model_for_test") is Throwaway
    finally:
        registry.models.unregister("throwaway_model_for_test")


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    package = tmp_path / "ep_plugin_pkg.py"
    package.write_text(textwrap.dedent("""
        from lavis_ib import registry
        from lavis_ib.processors import BaseProcessor

        @registry.register_processor("ep_plugin_processor")
        class EPProcessor(BaseProcessor):
            def __call__(self, item):
                return item
    """))
    dist = tmp_path / "ep_plugin_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lavis_ib.plugins]\nmine = ep_plugin_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    try:
        loaded = registry_module.load_entry_point_plugins()
        assert "ep_plugin_pkg" in loaded
        assert registry.get_processor_class("ep_plugin_processor").__name__ == "EPProcessor"
    finally:
        registry.processors.unregister("ep_plugin_processor")
        sys.modules.pop("ep_plugin_pkg", None)


@pytest.mark.integration
def test_import_lavis_ib_is_light():
    code = ("import sys, lavis_ib; from lavis_ib import registry; "
            "heavy = [m for m in ('torch', 'transformers', 'webdataset', 'av', 'pycocoevalcap', "
            "'timm') if m in sys.modules]; print(heavy)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert torch  # torch itself is fine to import in tests
