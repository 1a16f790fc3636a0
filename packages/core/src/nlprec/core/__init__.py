"""MLflow-tracked pipeline runner, models and data resolution for nlprec"""
