from lrkit.cli import main

raise SystemExit(main())
