package dev.beamport.pipelines;

import com.google.api.services.bigquery.model.TableFieldSchema;
import com.google.api.services.bigquery.model.TableRow;
import com.google.api.services.bigquery.model.TableSchema;
import java.util.Arrays;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.io.gcp.bigquery.BigQueryIO;
import org.apache.beam.sdk.io.gcp.pubsub.PubsubIO;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.options.Validation;
import org.apache.beam.sdk.transforms.Count;
import org.apache.beam.sdk.transforms.Filter;
import org.apache.beam.sdk.transforms.FlatMapElements;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.TypeDescriptor;
import org.apache.beam.sdk.values.TypeDescriptors;

/**
 * WordCount over Google's services, as a Dataflow user writes it: gs:// text in, the counts out to a BigQuery
 * table (streaming inserts, the table made if needed), a Pub/Sub topic ("word: count" messages) and gs:// text.
 * Nothing here names an endpoint: where GCS, BigQuery and Pub/Sub are is the runner's business.
 */
public class GoogleServicesWordCount {
  /** Where the text comes from and where the counts go. */
  public interface Options extends PipelineOptions {
    @Description("The text to count the words of (gs://...)")
    @Validation.Required
    String getInputFile();

    void setInputFile(String value);

    @Description("The prefix of the output files (gs://...)")
    @Validation.Required
    String getOutput();

    void setOutput(String value);

    @Description("The BigQuery table the counts go to (PROJECT:DATASET.TABLE)")
    @Validation.Required
    String getTable();

    void setTable(String value);

    @Description("The Pub/Sub topic the counts go to (projects/PROJECT/topics/TOPIC)")
    @Validation.Required
    String getTopic();

    void setTopic(String value);
  }

  public static void main(String[] args) {
    Options options = PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    Pipeline pipeline = Pipeline.create(options);
    PCollection<KV<String, Long>> counts =
        pipeline
            .apply("ReadLines", TextIO.read().from(options.getInputFile()))
            .apply(
                "ExtractWords",
                FlatMapElements.into(TypeDescriptors.strings())
                    .via((String line) -> Arrays.asList(line.split("[^\\p{L}]+"))))
            .apply("DropEmpty", Filter.by((String word) -> !word.isEmpty()))
            .apply("CountWords", Count.perElement());
    PCollection<String> lines =
        counts.apply(
            "Format",
            MapElements.into(TypeDescriptors.strings())
                .via(count -> count.getKey() + ": " + count.getValue()));
    lines.apply("WriteCounts", TextIO.write().to(options.getOutput()));
    lines.apply("PublishCounts", PubsubIO.writeStrings().to(options.getTopic()));
    TableSchema schema =
        new TableSchema()
            .setFields(
                Arrays.asList(
                    new TableFieldSchema().setName("word").setType("STRING"),
                    new TableFieldSchema().setName("count").setType("INTEGER")));
    counts
        .apply(
            "ToRows",
            MapElements.into(TypeDescriptor.of(TableRow.class))
                .via(count -> new TableRow().set("word", count.getKey()).set("count", count.getValue())))
        .apply(
            "WriteToBigQuery",
            BigQueryIO.writeTableRows()
                .to(options.getTable())
                .withSchema(schema)
                .withMethod(BigQueryIO.Write.Method.STREAMING_INSERTS)
                .withCreateDisposition(BigQueryIO.Write.CreateDisposition.CREATE_IF_NEEDED)
                .withWriteDisposition(BigQueryIO.Write.WriteDisposition.WRITE_APPEND)
                // The dataset is checked where the pipeline is built unless told not to: here, on the
                // workers, where the table is made.
                .withoutValidation());
    PipelineResult result = pipeline.run();
    System.out.println("FINAL_STATE " + result.waitUntilFinish());
  }
}
