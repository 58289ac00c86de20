"""``python -m ipp_seg``: the same command line as ``ipp-seg``."""

from ipp_seg.launch import main

if __name__ == "__main__":
    main()
