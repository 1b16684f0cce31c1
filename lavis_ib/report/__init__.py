"""Reports of results: our runs beside the paper's tables (`tables`, `runs`), the bar chart
(`chart`), the paper's numbers as data (`paper`) and the README's model-zoo table (`zoo`)."""
