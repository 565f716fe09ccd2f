"""Data in: datasets behind one interface, audio decoding, and the rejects report."""
