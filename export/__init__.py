"""s2s_export: define, train and export recurrent encoder–decoder models as s2s_runtime bundles (needs torch)."""
