"""tests/ui is a package so that its one Airflow (package-scoped fixtures) stops when its last test ends."""
