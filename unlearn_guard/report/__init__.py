"""Human reports of probe and gate results: a self-contained HTML file with embedded plots."""
