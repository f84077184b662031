"""The engine: everything that touches onnxruntime — sessions and provider choice, the device a model's tensors live
on, the encoder, the decoder-step runners over their buffer backends, CUDA graph capture — and the per-generation
state the decoding strategies run over. Nothing here knows of options, requests or serving."""
