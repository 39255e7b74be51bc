from seemore.cli import main

raise SystemExit(main())
