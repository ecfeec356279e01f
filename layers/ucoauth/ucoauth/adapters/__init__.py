"""The adapters: the table (its keys, codec and one module per kind of item), UltraCart
over HTTP with its budget, the client secret, and the AWS clients (KMS, SQS, EventBridge).

Import from the submodules: this package imports nothing.
"""
