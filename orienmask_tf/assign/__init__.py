"""Anchor assignment shared by the families: IoU / GIoU / DIoU and the
mask-aware IoU (maIoU paper Eq. 5, Alg. 1), and the fixed-IoU / ATSS
assigners, vectorised over padded ground truth."""
