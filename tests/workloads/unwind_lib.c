/* libunwind_lib.so: the shared library unwind_chain calls through its PLT.
 *
 * Built like the fixture (gcc -O2 -fomit-frame-pointer -fasynchronous-unwind-tables, see
 * tests/build.rs): its one function has a frame of its own (a local array, no frame pointer)
 * and calls back into the executable, so a stack walker must go from the executable into the
 * library and back out through its .eh_frame.
 */

/* Calls callback(arg) from a frame of its own and returns its result. */
__attribute__((noipa)) int unwind_lib_call(int (*callback)(int), int arg)
{
	volatile char scratch[72];
	scratch[0] = (char)arg;
	int result = callback(arg);
	/* Used after the call: the call is no tail call, this frame stays on the stack. */
	asm volatile("" ::: "memory");
	return result + scratch[0];
}
