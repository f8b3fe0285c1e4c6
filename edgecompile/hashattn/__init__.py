"""Binary-hash attention (EcoFormer, learned post-training): matching, hash fitting, packed kernels."""
