"""`python -m testbed.dockershim CONTAINER -- ARGV...`: the docker backend's exec prefix
(see testbed/backends/dockerexec.py). A module of its own, outside testbed.backends, so that
running it does not import it twice (runpy warns when a package imports its __main__)."""

import sys

from testbed.backends.dockerexec import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
