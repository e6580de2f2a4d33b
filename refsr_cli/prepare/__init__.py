"""Making stores: light-field decoding, the synthetic renderer, video footage, built-in clips."""
