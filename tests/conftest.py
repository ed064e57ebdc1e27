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
