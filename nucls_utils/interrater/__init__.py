"""Inter-rater analysis: box clustering into anchors, Dawid-Skene truth inference, agreement, accuracy, and the
NP-redundancy simulation (paper Figures 2-5, S3, S5, S7, S8, S16; notes sections 2a-2d)."""
