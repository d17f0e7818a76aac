"""Statistical models fitted on the store: CLV (BG/NBD, Gamma-Gamma) and segmentation."""
