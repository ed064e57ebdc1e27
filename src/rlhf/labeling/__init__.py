"""The labeling app: a FastAPI service where people (or simulated labelers) write demonstrations,
rank K responses with ties, and rate responses 1-7 with the Table 3 metadata; exports the JSONL
records that SFT, reward-model training and evaluation read."""
