"""The MLflow model registry as shopml uses it, shared by training and serving.

`registry.metadata` says what a logged model records (its family and kind, never code to run)
and rebuilds a model from it; it imports no MLflow, so a running service can use it.
`registry.store` is the MLflow side: aliases, registering a logged model, downloading a version.
"""
