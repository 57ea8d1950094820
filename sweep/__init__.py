"""sweep: which convolutional autoencoder architecture, and why.

Importing the package is cheap: Keras and TensorFlow load only inside the functions that
build or train models, so command-line help, search-space validation and the results
store work without them.
"""

__version__ = "0.2.0"
