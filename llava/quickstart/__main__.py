from llava.quickstart.pipeline import main

main()
