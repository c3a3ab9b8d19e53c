"""Model providers behind one factory."""
