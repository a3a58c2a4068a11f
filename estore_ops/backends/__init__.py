"""Where files and rows live: object stores and warehouses, one module per backend, their retry policy and error translation."""
