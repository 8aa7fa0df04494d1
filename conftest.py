# Makes the repository root importable in tests (bench.models is shared by tests and benchmarks).
