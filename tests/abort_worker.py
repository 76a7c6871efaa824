"""A stand-in for the converter child that dies the way TF 2.16.2's converter does on a
Keras 3 Conv2D model (``LLVM ERROR`` then abort): used only to test that the parent
isolates the crash. The real crash is tested in the tf216 tox env."""

import os
import sys

if __name__ == "__main__":
    sys.stderr.write("LLVM ERROR: Failed to infer result type(s).\n")
    sys.stderr.flush()
    os.abort()
