"""The pipeline configs ship inside the package (so the wheel has them), and the repository's
configs/ is the same folder, not a copy."""

import tomllib
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("demo.yaml", "demo_copy.yaml", "quick.yaml")
EXAMPLES = ("smollm2-135m-1gpu.yaml", "smollm2-135m-8gpu.yaml", "qwen2.5-0.5b-1gpu.yaml",
            "qwen2.5-0.5b-8gpu.yaml", "README.md")


def test_configs_are_package_data():
    package = files("rlhf") / "configs"
    for name in CONFIGS:
        assert (package / name).is_file(), name
    for name in EXAMPLES:
        assert (package / "examples" / name).is_file(), name
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"configs/*.yaml", "configs/examples/*.yaml", "configs/examples/README.md"} <= \
        set(data["rlhf"])


def test_root_configs_is_the_package_folder():
    assert (ROOT / "configs").resolve() == (ROOT / "src" / "rlhf" / "configs").resolve()
    assert set(CONFIGS) <= {p.name for p in (ROOT / "configs").glob("*.yaml")}
