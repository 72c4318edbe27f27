from torch_geometric_sdt.cli import main

if __name__ == '__main__':
    raise SystemExit(main())
