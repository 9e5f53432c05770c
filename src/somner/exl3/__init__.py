"""The ExLlamaV3 engine: EXL3 model folders on CUDA GPUs, in a worker process of their own (`somner worker-exl3`).

It speaks the same worker protocol as the llama.cpp engine (`engine/server.py` serves both, over
`engine/served.py`), so the gateway drives it like any worker. Layers: `generator.py` (the part of ExLlamaV3 the
engine uses, as a protocol; `exllama.py` over the real library, a fake in the tests), `scheduler.py` (the engine
thread: jobs in, chunks out, stop strings and limits), `runtime.py` (requests into jobs), `worker.py` (the process).
Only the worker imports this package; the library and PyTorch are imported when a model loads.
"""
