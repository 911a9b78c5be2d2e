"""Words people read, in Japanese and English."""
