/* A shared library that is not a Go plugin. */
int native_answer(void) { return 42; }
