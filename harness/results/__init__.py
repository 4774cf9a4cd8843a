"""The data every stage shares: a case, the columns of its row, the run directory that
holds the rows, and the machine they were measured on."""
