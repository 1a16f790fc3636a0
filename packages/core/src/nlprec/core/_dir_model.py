"""MLflow "models from code" definition for models logged as a plain directory (flavor "dir").

nlprec packages save their own model formats (an index, a recommender state, ...). MLflow needs a
pyfunc model to register a version, so the directory is logged as that model's artifact; consumers
load it with `nlprec.core.models.resolve("models:/<name>@<alias>")`, which returns the directory.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class DirectoryModel(PythonModel):
    """Holds a directory of files; `predict` returns the local path of that directory."""

    def load_context(self, context):
        self.model_dir = context.artifacts["model_dir"]

    def predict(self, context, model_input, params=None):
        return [self.model_dir]


mlflow.models.set_model(DirectoryModel())
