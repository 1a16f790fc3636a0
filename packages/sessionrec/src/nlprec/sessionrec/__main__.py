import sys

from nlprec.sessionrec.batch import main

sys.exit(main())
