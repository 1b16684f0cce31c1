"""Reports of results: the paper's numbers as data (`paper_types`, `paper`, `paper_tables`),
which of our numbers stands beside which (`mapping`), our runs beside Table 1 (`tables`,
`runs`) or beside Table 2, 3 and Figure 4 (`compare`), the bar charts (`chart`) and the
README's model-zoo table (`zoo`)."""
