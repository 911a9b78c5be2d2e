"""The class's grades: the SQLite gradebook, what each student handed in and when, and the final score."""
