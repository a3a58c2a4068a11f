"""After the load: dbt transforms and snapshots, the terminal report and the HTML report."""
