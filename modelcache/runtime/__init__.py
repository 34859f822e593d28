"""L1: GPU-resident LoRA hot reload inside inference pods (extra `[runtime]`)."""
