"""Neural-network building blocks of SegDiff (image encoder G, U-Net E/D, time embeddings)."""
