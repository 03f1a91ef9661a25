"""Figure functions of aqua_model: each returns a matplotlib Figure built on the Agg backend."""
