"""What people read: result.json, report.html, index.html, grades.csv, figures and the rendered notebook."""
