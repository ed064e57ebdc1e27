import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the pipeline's base cache: one throw-away folder per test session, never the user's
if "RLHF_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["RLHF_CACHE_DIR"] = tempfile.mkdtemp(prefix="rlhf-test-cache-")

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402

from rlhf.labeling.testing import BACKENDS, NoDatabase, temporary_database  # noqa: E402


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """An empty labeling database: every test that takes it runs on SQLite and on PostgreSQL
    (skipped, saying why, where no server can be had)."""
    try:
        with temporary_database(request.param, tmp_path) as url:
            yield url
    except NoDatabase as e:
        pytest.skip(str(e))
