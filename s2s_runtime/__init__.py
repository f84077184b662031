"""s2s_runtime: torch-free inference for recurrent encoder–decoder models exported by s2s_export."""
