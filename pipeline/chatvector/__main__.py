from chatvector.cli import main

raise SystemExit(main())
