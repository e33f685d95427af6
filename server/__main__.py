import sys

from licensing_server.app import main

sys.exit(main())
