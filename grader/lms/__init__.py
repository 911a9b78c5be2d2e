"""The learning-management system's side: unpacking a bulk download into one notebook per student."""
