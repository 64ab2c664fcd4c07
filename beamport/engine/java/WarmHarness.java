// A Beam Java SDK harness started ahead of its job (beamport/engine/java_warm.py): run in source-file mode,
// `java -cp JARS WarmHarness.java SOCKET`, by a standby executor, inside the sandbox its job will get.
//
// It first does what every Beam Java program pays for at start (its classes loaded, PipelineOptionsFactory's
// registry of every options interface on its class path, validated by reflection: about 2 s), then waits on
// the Unix socket SOCKET for one job's launcher (java_boot), which sends, one per line:
//   env<TAB>NAME<TAB>VALUE   the harness's environment (values escaped: \\ \t \n)
//   jar<TAB>PATH             the job's jars that are not on this JVM's class path already
//   run
// It then runs Beam's FnHarness over a class loader of those jars (its parent: this JVM's class path), its
// output sent back over the socket, and ends with a line `exit STATUS`. One job per JVM; it exits when the
// launcher does.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.net.StandardProtocolFamily;
import java.net.URL;
import java.net.URLClassLoader;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

public final class WarmHarness {
  public static void main(String[] args) throws Exception {
    Path socket = Path.of(args[0]);
    warmUp();
    ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
    Path binding = socket.resolveSibling(socket.getFileName() + ".binding");
    server.bind(UnixDomainSocketAddress.of(binding));
    Files.move(binding, socket); // there only once this JVM is warm: a launcher that finds it waits no more
    SocketChannel channel = server.accept();
    server.close();
    BufferedReader in =
        new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
    Map<String, String> env = new HashMap<>();
    List<URL> jars = new ArrayList<>();
    long launcher = -1;
    for (String line; (line = in.readLine()) != null && !line.equals("run"); ) {
      String[] parts = line.split("\t", 3);
      if (parts[0].equals("env") && parts.length == 3) {
        env.put(unescape(parts[1]), unescape(parts[2]));
      } else if (parts[0].equals("jar") && parts.length == 2) {
        jars.add(Path.of(unescape(parts[1])).toUri().toURL());
      } else if (parts[0].equals("launcher") && parts.length == 2) {
        launcher = Long.parseLong(parts[1]);
      }
    }
    // Its launcher gone (killed with its job), this JVM goes too.
    ProcessHandle.of(launcher)
        .ifPresentOrElse(
            handle -> handle.onExit().thenRun(() -> Runtime.getRuntime().halt(1)),
            () -> Runtime.getRuntime().halt(1));
    PrintStream out = new PrintStream(Channels.newOutputStream(channel), true, StandardCharsets.UTF_8);
    System.setOut(out);
    System.setErr(out);
    int status = 0;
    try {
      ClassLoader loader = new URLClassLoader(jars.toArray(new URL[0]), WarmHarness.class.getClassLoader());
      Thread.currentThread().setContextClassLoader(loader);
      Function<String, String> variables = env::get;
      Class.forName("org.apache.beam.fn.harness.FnHarness", true, loader)
          .getMethod("main", Function.class)
          .invoke(null, variables);
    } catch (InvocationTargetException e) {
      e.getCause().printStackTrace();
      status = 1;
    } catch (Throwable e) {
      e.printStackTrace();
      status = 1;
    }
    out.println("exit " + status);
    out.flush();
    System.exit(status);
  }

  /** What a Beam Java program does first, before it knows its job. */
  private static void warmUp() throws Exception {
    ClassLoader loader = WarmHarness.class.getClassLoader();
    Class.forName("org.apache.beam.fn.harness.FnHarness", true, loader);
    Class.forName("org.apache.beam.sdk.options.PipelineOptionsFactory", true, loader)
        .getMethod("create")
        .invoke(null);
  }

  private static String unescape(String text) {
    StringBuilder out = new StringBuilder(text.length());
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (c == '\\' && i + 1 < text.length()) {
        char next = text.charAt(++i);
        out.append(next == 't' ? '\t' : next == 'n' ? '\n' : next);
      } else {
        out.append(c);
      }
    }
    return out.toString();
  }
}
