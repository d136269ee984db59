"""scipy (half a second to import) loads only when a search needs it: a Sobol draw or
coarse-to-fine's model, not for every command that reads a spec."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _scipy_loaded_after(code: str) -> bool:
    probe = code + "\nimport sys\nprint(any(m.split('.')[0] == 'scipy' for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1] == "True"


def test_validating_and_planning_a_random_search_does_not_import_scipy() -> None:
    code = """
from service.app import create_app
from service.settings import Settings
from service.spec import plan_round
from service.studies import validate_spec
import yaml
data = yaml.safe_load(open("examples/moons.yaml"))
spec = validate_spec(data, settings=Settings())
assert len(plan_round(spec, round_index=0)[1]) == 24
"""
    assert not _scipy_loaded_after(code)


def test_a_sobol_round_imports_scipy_when_it_draws() -> None:
    code = """
from service.search.strategies import SobolSampler
assert SobolSampler(seed=0).sample(n=4, dims=2).shape == (4, 2)
"""
    assert _scipy_loaded_after(code)
