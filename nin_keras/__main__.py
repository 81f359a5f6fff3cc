import sys

from nin_keras.cli import main

sys.exit(main())
