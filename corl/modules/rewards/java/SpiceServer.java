import edu.anu.spice.Evaluation;
import edu.anu.spice.SceneGraph;
import edu.anu.spice.SpiceParser;
import edu.anu.spice.SpiceStats;
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.json.simple.JSONArray;
import org.json.simple.JSONObject;
import org.json.simple.parser.JSONParser;

/**
 * SPICE as a long-lived process: one JVM and one CoreNLP pipeline for a whole training run.
 *
 * <p>Prints {@code READY} once the parser is loaded, then reads one JSON line per batch,
 * {@code [{"test": "...", "refs": ["...", ...]}, ...]}, and answers one line: the JSON array of the
 * SPICE "All" F-scores ({@code null} where there is none), or {@code ERROR <message>}. Exits on EOF.
 * Scores as {@code edu.anu.spice.SpiceScorer.scoreBatch} does (no LMDB cache, synsets on), without its
 * JavaScript pretty-printing, which needs the Nashorn engine that Java 15 removed.
 *
 * <p>Usage: {@code java -cp ... SpiceServer [threads]}
 */
public class SpiceServer {
    public static void main(String[] args) throws Exception {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : Runtime.getRuntime().availableProcessors();
        PrintStream replies = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
        System.setOut(System.err); // CoreNLP and SPICE log to stdout in places: stdout carries replies only
        SpiceParser parser = new SpiceParser(null, threads, true);
        replies.println("READY");
        BufferedReader requests = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = requests.readLine()) != null; ) {
            if (line.trim().isEmpty()) {
                continue;
            }
            try {
                replies.println(score(parser, line));
            } catch (Exception e) {
                e.printStackTrace();
                replies.println("ERROR " + String.valueOf(e).replaceAll("\\s+", " "));
            }
        }
    }

    static String score(SpiceParser parser, String line) throws Exception {
        List<String> tests = new ArrayList<>();
        List<String> refs = new ArrayList<>();
        List<Integer> refCounts = new ArrayList<>();
        for (Object element : (JSONArray) new JSONParser().parse(line)) {
            JSONObject item = (JSONObject) element;
            tests.add((String) item.get("test"));
            JSONArray itemRefs = (JSONArray) item.get("refs");
            refCounts.add(itemRefs.size());
            for (Object ref : itemRefs) {
                refs.add((String) ref);
            }
        }
        List<SceneGraph> refGraphs = parser.parseCaptions(refs, refCounts);
        List<SceneGraph> testGraphs = parser.parseCaptions(tests);
        SpiceStats stats = new SpiceStats(new HashMap<>(), false); // no tuple subsets: only "All" is read
        for (int i = 0; i < testGraphs.size(); i++) {
            stats.score(i, testGraphs.get(i), refGraphs.get(i), true); // last argument: match synsets
        }
        StringBuilder reply = new StringBuilder("[");
        for (Object element : stats.toJSONArray()) {
            Map<?, ?> scores = (Map<?, ?>) ((JSONObject) element).get("scores");
            double f = ((Evaluation) scores.get("All")).f;
            reply.append(reply.length() > 1 ? "," : "").append(Double.isFinite(f) ? Double.toString(f) : "null");
        }
        return reply.append("]").toString();
    }
}
